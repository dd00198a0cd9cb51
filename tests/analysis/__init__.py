"""Tests of Grad-CAM, tables, figures and the bias audit."""
