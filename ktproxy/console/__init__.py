"""The web console: a static single-page app served at `/console`, fed by the admin API."""
