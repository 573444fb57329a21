"""HTTP and WebSocket endpoints: parse, authenticate, validate; fan-out lives in the hub."""
