"""Worker side: the node that starts runners, and the runner that owns a llama.cpp context."""
