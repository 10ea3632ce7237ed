"""The tipline command line: run the stack, the demo, an agency's tail, and operator tools."""
