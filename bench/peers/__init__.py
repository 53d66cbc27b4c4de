"""Task modules of the peer systems (imported by their worker commands)."""
