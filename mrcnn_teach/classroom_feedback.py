"""An nbgrader preprocessor that keeps hidden tests out of the feedback students receive.

nbgrader 0.9's `generate_feedback` renders the autograded notebook, whose test cells autograde
restored from the gradebook with their hidden tests in: by default a student reads the hidden
test's code, and its traceback, in the feedback. The course's nbgrader_config.py
(mrcnn_teach.classroom) runs this preprocessor after GetGrades. In every code cell it

- removes the hidden-test regions from the source (as generate_assignment's ClearHiddenTests does),
- cuts the traceback of an error raised by a check (ExerciseFailed, ExerciseNotAttempted), and of
  any error in a cell that had a hidden test, to its last line: the check's own message, which for
  a hidden case names no input (mrcnn_teach.exercises.run_check).

Scores are untouched: feedback takes them from the gradebook.
"""

from __future__ import annotations

from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

CHECK_ERRORS = ("ExerciseFailed", "ExerciseNotAttempted")


class HideHiddenTests(NbGraderPreprocessor):
    """Remove hidden tests (code and traceback) from the notebook that feedback is rendered from."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        had_hidden = ClearHiddenTests(enforce_metadata=False)._remove_hidden_test_region(cell)
        for output in cell.get("outputs", []):
            if output.output_type == "error" and (had_hidden or output.ename in CHECK_ERRORS):
                output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources
