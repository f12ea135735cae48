"""Tests that drive the staff pages in a real headless browser."""
