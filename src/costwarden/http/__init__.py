"""The HTTP adapter: app factory, gateway routes, admin routes, error rendering."""
