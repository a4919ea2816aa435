"""Tests of `ami`."""
