"""Scoring backends, answer parsing and the resumable result store."""
