"""Checkpoint converters: other projects' released weights <-> xomni's modules (`xomni convert ...`)."""
