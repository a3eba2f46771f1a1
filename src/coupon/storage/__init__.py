"""Storage: the port (``base``) and its SQL adapter (``sql``)."""
