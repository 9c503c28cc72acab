"""End-to-end flows (recipes) and their preset configs."""
