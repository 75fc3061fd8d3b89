"""What tests/test_launcher.py launches: says its rank and arguments, then exits with the code asked
for (the main process) or 0 (the others), or sleeps until it is killed ("sleep")."""
import os
import sys
import time

from core.jobs.launcher import report_exit

print(f"rank {os.environ.get('RANK', '-')} of {os.environ.get('WORLD_SIZE', '-')}: {' '.join(sys.argv[1:])}",
      flush=True)
if sys.argv[1] == "sleep":
    time.sleep(60)
sys.exit(report_exit(int(sys.argv[1]) if os.environ.get("RANK", "0") == "0" else 0))
