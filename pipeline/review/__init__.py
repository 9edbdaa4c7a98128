"""`ptvl review`: a local web app where people read translations side by side and correct them.

Modules: `tables` (the run's translated tables, one row per distinct source string), `queues` (what to
read next: flagged rows, worst scores, engine disagreement, a seeded sample), `rows` (everything one
row's page shows), `dialogs` and `vqa` (the VisDial and VQAv2 context of a row), `images` (image bytes by
dataset/split/image id, never by path), `state` (what the routes share), `app` (the Starlette routes and
pages), `actions` (the POSTs, which write the human overlay of translation/overlay.py), `guard` (token,
origin and Host, before any route), `limits` (request bodies bounded before they are read), `responses`
(security headers, refusals), `launch` (the CLI side of `ptvl review`) and `serve` (the server process,
`python -m pipeline.review`).
"""
