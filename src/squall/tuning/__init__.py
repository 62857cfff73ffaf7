"""Tuning: measure a model on a sample of the input and recommend the sizes and limits of a job."""
