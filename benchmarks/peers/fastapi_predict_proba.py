"""Peer for benchmarks/serving.py: a minimal FastAPI app scoring with XGBClassifier.predict_proba.

What a team would write without the platform: load the trained classifier, take the 49
encoded model features as JSON, return P(fraud). No feature lookup, no validation beyond
pydantic's list of floats, no logging. One uvicorn worker.

  .venv/bin/python benchmarks/peers/fastapi_predict_proba.py --model model.json --port 8002

POST /predict {"features": [49 floats]} -> {"fraud_probability": float}; GET /ready -> 200.
The model file is XGBoost's own JSON format (Booster.save_model), written by serving.py
after it retrains the champion's trees and checks them against the registered ONNX graph.
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
import xgboost
from fastapi import FastAPI
from pydantic import BaseModel


class Features(BaseModel):
    features: list[float]


def build_app(model_path: str) -> FastAPI:
    model = xgboost.XGBClassifier()
    model.load_model(model_path)
    # One thread, like the training config (n_jobs=1): a single row gains nothing from more.
    model.set_params(n_jobs=1)
    n_features = model.n_features_in_
    app = FastAPI()

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(body: Features) -> dict:
        X = np.asarray([body.features], dtype=np.float32).reshape(1, n_features)
        return {"fraud_probability": float(model.predict_proba(X)[0, 1])}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="XGBoost JSON model file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same uvicorn settings as `mlops serve`: uvloop + httptools (uvicorn's defaults when
    # installed), no access log, warnings only.
    uvicorn.run(build_app(args.model), host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
