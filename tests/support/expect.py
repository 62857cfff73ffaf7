"""What a job's output must equal: the model's own call on the same rows."""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd

from support.data import FEATURES


def expected_proba(model_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    model = joblib.load(model_path)
    proba = model.predict_proba(frame[FEATURES])
    out = pd.DataFrame({f"prediction_{c}": proba[:, i] for i, c in enumerate(model.classes_)})
    out.insert(0, "id", frame["id"].to_numpy())
    return out.set_index("id").sort_index()
