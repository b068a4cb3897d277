"""The PostgreSQL backend of fleet mode (`[store] backend = "postgres"`): several NJet nodes,
each with its own controller, share one certificate set (README "Fleet mode")."""
