"""Runs pytest for CTest: exit code 77 (CTest's "skipped") when pytest is not installed or when every test
skipped (no ../shared), so that CTest does not report such a run as passed."""
import sys

try:
    import pytest
except ImportError:
    print("python_tests skipped: pytest is not installed (apt-get install python3-pytest, or run scripts/install.sh)")
    sys.exit(77)


class _Outcomes:
    def __init__(self):
        self.passed = 0
        self.skipped = 0

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            self.skipped += 1
        elif report.passed and report.when == "call":
            self.passed += 1


outcomes = _Outcomes()
code = int(pytest.main(sys.argv[1:], plugins=[outcomes]))
if code == 0 and outcomes.passed == 0 and outcomes.skipped > 0:
    print("python_tests skipped: every test skipped (see the reasons above)")
    sys.exit(77)
sys.exit(code)
