"""Durable storage behind one interface (base.Store): embedded SQLite, or PostgreSQL."""
