"""App profiles: what mdsl knows about real apps (Mastodon, Nextcloud, Gitea...), shipped as
one TOML file per app under `profiles/`, each fact with its source.

`mdsl check` holds a plan that names its app (`app = "..."` on a service) to the profile
(the A1xx findings); `mdsl explain APP` shows the profile; `mdsl init` matches what a host
runs against the layouts' fingerprints. This package reads and validates the files; it
imports nothing of mdsl but the store kinds' names.
"""
