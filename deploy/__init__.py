"""Serving and deployment: package a run, answer predictions locally, and the Lambda front door."""
