"""Hubbub's own transport: the HTTP/1.1 entry, WebSocket sessions, incoming frames, keepalive."""
