"""Cinder volume driver wrapper of shareless (Method A); see driver.py."""
