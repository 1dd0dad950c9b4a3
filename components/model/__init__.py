"""The model layer, below the steps: backbones, their initial weights and the model file."""
