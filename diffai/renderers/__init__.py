"""Renderers turn a report document into what a person or a program reads."""
