"""The web console (SPEC §14), served at `/console` by the API's own process.

- `router.py`: the pages and forms, each calling the API's services (one source of truth
  for validation and tenancy);
- `sessions.py`: an API key exchanged once for a server-side session (only its hash kept);
- `csrf.py`: the cross-site defences of every form, and the form parser;
- `forms.py`: form fields to API bodies, and the API's field errors back to the fields;
- `charts.py`: SVG chart geometry; `pages.py`: templates, security headers, static files.

docs/console.md explains the decisions.
"""
