"""`ptvl review`: a local web app where people read translations side by side and correct them.

Modules: `tables` (the run's translated tables, one row per distinct source string), `queues` (what to
read next: flagged rows, worst scores, engine disagreement, a seeded sample), `rows` (everything one
row's page shows), `images` (image bytes by dataset/split/image id, never by path), `app` (the
Starlette routes and the actions, which write the human overlay of translation/overlay.py).
"""
