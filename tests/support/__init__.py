"""What the tests share: a real server (herd_server), the tiny GGUF models they write
(tiny_models), a real OCI registry (registry_server), conversion checkpoints
(convert_fixtures), chat templates (tool_templates) and data files (fixtures/)."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
