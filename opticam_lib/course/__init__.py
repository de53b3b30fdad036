"""The course wing: what only the notebooks use. Chapter helpers are named after what they teach; every
exercise checker is in ``exercises`` (``check_*``: no other function of the package is named so); ``widgets`` and
``figures`` draw; ``edition`` writes the student edition and the HTML site. Nothing in the library imports this
package.
"""
