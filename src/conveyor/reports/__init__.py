"""Reports rendered from a candidate's report dict: the CI comment, JUnit XML, the model card."""
