"""Source readers: turn each dataset's official files (CC3M TSV, COCO JSON, VisDial JSON) into the
segments / items / quarantine / dialogs contracts of pipeline.contracts."""
