"""``python -m opticam_lib.edition {student,html,figure,check,nav,home,grade}``: the command lives in
``opticam_lib.course.edition`` (the student edition, the site, navigation, badges; grading in ``course.grader``)."""

import sys

from opticam_lib.course.edition import main

if __name__ == "__main__":
    sys.exit(main())
