"""Report rendering, with a formatter module imported only when needed."""
