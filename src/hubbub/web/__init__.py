"""Static files of the browser UI (no build step)."""
