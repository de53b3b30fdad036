"""Kept so that ``python -m opticam_lib.edition {student,html,check}`` still works: the student edition and the
HTML site live in ``opticam_lib.course.edition``."""

import sys

from opticam_lib.course.edition import main

if __name__ == "__main__":
    sys.exit(main())
