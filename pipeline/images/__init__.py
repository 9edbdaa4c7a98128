"""Images of a dataset split: downloaded with img2dataset, corrected where it decodes wrongly, read back.

Modules, each importing only those listed before it (no cycle, no import hidden in a function):

    settings.py   DownloadSettings, the `[download]` table
    layout.py     the download folder's contract: file names and paths (manifest_path, fixes_path, ...)
    store.py      the one reader of img2dataset's output: complete shards, image bytes, corrected bytes
    fixes.py      re-encodes the images img2dataset decodes wrongly (EXIF orientation, 16-bit PNGs)
    download.py   the stage: img2dataset runs, retry rounds, the availability table, the manifest

The review app's image lookup (pipeline/review/images.py) reads through store.py too.  Nothing is
imported here, so reading images never loads the download machinery; none of these modules imports torch.
"""
