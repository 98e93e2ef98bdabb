"""Train the embedded demo policy: scripted sim demonstrations -> a small Pi0.5 -> a servable checkpoint.

    python -m training.demos --out .cache/demos/hover        # scripted expert demos (LeRobot v3.0 dataset)
    python -m training.train --out runs/demo_policy          # builds/reuses the demos, trains, writes checkpoint
    python -m training.evaluate --checkpoint runs/demo_policy --episodes 20   # closed loop over gRPC in sim

Training feeds the model exactly what serving feeds it (policy_server.pi05_policy): states and actions go
through the one normalization pipeline (policy_norm), prompts through the Pi0.5 tokenizer with
the discretized state, images resized as the client does and scaled to [-1, 1] as the server does.
"""
