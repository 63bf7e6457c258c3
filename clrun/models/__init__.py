"""Backbones and output heads."""
