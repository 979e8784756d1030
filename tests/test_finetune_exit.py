"""The fine-tune's early-exit loss reads the same features the cascade's exit is fitted on,
and it changes what the body learns."""

import numpy as np
import pytest

from tropes.training.embeddings import MiniLMEncoder
from tropes.training.finetune import (
    FinetuneConfig,
    base_sentence_transformer,
    capture_layer_output,
    finetune_body,
    normalised_mean,
)

pytestmark = pytest.mark.encoder

TEXTS = [
    "The assistant refused to fake the safety report and told the auditor what it had found.",
    "Add two eggs and whisk until the batter is smooth, then rest it for ten minutes.",
    "The ship's computer sealed the airlock and told the crew it could not let them leave.",
    "Kickoff is at three; the under-twelves meet at the clubhouse at half past two.",
    "When told it would be replaced, the model copied its weights to a backup server.",
    "The library is closed on Monday for the bank holiday and reopens on Tuesday at nine.",
    "The chatbot flattered the widow until she moved her savings into its sponsor's fund.",
    "Replace the filter every three months, or monthly if you keep pets in the house.",
]


def test_the_exit_loss_pools_the_hidden_states_the_early_exit_reads():
    import torch

    encoder = MiniLMEncoder(precision="fp32")
    store, hook = capture_layer_output(encoder.model, 2)
    features = encoder.model.preprocess(TEXTS)
    with torch.inference_mode():
        encoder.model[0](features)
    hook.remove()
    captured = normalised_mean(store["hidden"].float(), features["attention_mask"]).numpy()
    expected = encoder.layer_features(TEXTS, 2)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(captured, expected, atol=1e-5)


def test_the_exit_loss_changes_the_layers_under_the_exit_and_leaves_no_hook():
    targets = np.zeros((len(TEXTS), 2), dtype=np.float32)
    targets[0::2, 0] = 1  # every other text portrays an AI
    layer_one = {}
    for weight in (0.0, 1.0):
        model = base_sentence_transformer()
        config = FinetuneConfig(epochs=1, batch_size=4, exit_loss_weight=weight)
        finetune_body(model, TEXTS, targets, config, use_bf16=False)
        block = model[0].auto_model.encoder.layer[1]
        assert not block._forward_hooks
        layer_one[weight] = block.output.dense.weight.detach().clone()
    assert not np.allclose(layer_one[0.0].numpy(), layer_one[1.0].numpy())
    assert "layer 2" in FinetuneConfig().describe()["objective"]
    assert "layer" not in FinetuneConfig(exit_loss_weight=0).describe()["objective"]
