"""HTTP side of pandapush: the site, the Klein apps (health, REST publish, admin)."""
