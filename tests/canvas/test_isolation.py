from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_canvas_imports_and_compiles_without_django_or_google():
    script = (
        "import json, sys\n"
        "import canvas\n"
        "canvas.compile(canvas.group(canvas.signature('t'), canvas.signature('u')))\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('django', 'google', 'grpc', 'django_cloudtasks'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []
