"""Emulated devices that speak the real protocols on loopback."""
