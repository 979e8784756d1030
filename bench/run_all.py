"""Run every benchmark in turn (each prints its own table). Run: make bench"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("speed.py", "score_memory.py", "train_time.py"):
    print(f"\n== {script} ==", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
