"""Vision in the runner: image files (imagefile), projector GGUFs (mmproj), libmtmd's context
(projector), prompts with images and their encoding thread (prompt), the embeddings decode of an
engine step (step) and BatchEngine's image-request side (requests)."""
