"""Server-rendered dashboard pages: read model (data), SVG chart, templates (render)."""
