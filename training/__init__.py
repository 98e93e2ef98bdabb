"""Train the embedded demo policy: scripted sim demonstrations -> a small Pi0.5 -> a servable checkpoint.

    python -m training.demos --out .cache/demos/hover        # scripted expert demos (LeRobot v3.0 dataset)
    python -m training.train --out runs/demo_policy          # builds/reuses the demos, trains, writes checkpoint
    python -m training.evaluate --checkpoint runs/demo_policy --episodes 20   # closed loop over gRPC in sim

Training feeds the model exactly what serving feeds it: model inputs are built by the server's own Pi0.5 input
transform (policy_server.pi05_inputs: images fitted and scaled to [-1, 1], camera-to-slot map, the one
normalization pipeline of policy_norm, prompts tokenized with the discretized state), so parity holds by
construction; the served check after training still compares the two tensor for tensor.
"""
