"""The web dashboard's built assets (``static/``), served by ``costwarden.http.dashboard``.

The sources live in the repository's ``dashboard/`` folder; ``scripts/build-dashboard`` rebuilds
``static/``, which is committed so that installing the package needs no Node.js.
"""
