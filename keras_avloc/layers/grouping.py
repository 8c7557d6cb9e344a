"""Transformer and grouping layers used by AVGN (Mo & Tian, CVPR 2023).

The layers follow the structure of the authors' grouping module (itself derived
from GroupViT): pre-norm self-attention blocks over ``[features; class tokens]``
followed by a grouping block that assigns every feature to the class tokens.

All layers work on channels-last token sequences ``[B, L, D]`` and build their
weights from ``dim`` alone, so a model that owns them is fully built at
construction time (which keeps ``.keras`` save/load simple).
"""

import keras
from keras import ops

LAYER_NORM_EPSILON = 1e-5  # PyTorch nn.LayerNorm default, used by the reference model.


def _dense(units, name, dtype=None, use_bias=True):
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        bias_initializer="zeros",
        name=name,
        dtype=dtype,
    )


def _layer_norm(name, dtype=None):
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name, dtype=dtype)


def _split_heads(x, num_heads):
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    head_dim = x.shape[-1] // num_heads
    x = ops.reshape(x, (batch, length, num_heads, head_dim))
    return ops.transpose(x, (0, 2, 1, 3))


def _merge_heads(x):
    x = ops.transpose(x, (0, 2, 1, 3))
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (batch, length, x.shape[2] * x.shape[3]))


def _softmax(x, axis):
    # Same as ops.softmax, without its warning when attending to a single key (the audio vector).
    exp = ops.exp(x - ops.stop_gradient(ops.max(x, axis=axis, keepdims=True)))
    return exp / ops.sum(exp, axis=axis, keepdims=True)


def straight_through_one_hot(soft_assignment, axis):
    """One-hot of the arg-max along ``axis`` with the gradient of ``soft_assignment``.

    Args:
        soft_assignment: float tensor of probabilities.
        axis: axis along which the one-hot is taken.

    Returns:
        A tensor equal to the one-hot arg-max in the forward pass whose gradient
        is the gradient of ``soft_assignment`` (straight-through estimator).
    """
    depth = soft_assignment.shape[axis]
    hard = ops.one_hot(ops.argmax(soft_assignment, axis=axis), depth, axis=axis, dtype=soft_assignment.dtype)
    return hard - ops.stop_gradient(soft_assignment) + soft_assignment


@keras.saving.register_keras_serializable(package="keras_avloc")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch per sample while training.

    Args:
        rate: probability of dropping the branch.
        seed: optional integer seed.

    Example:
    >>> y = DropPath(0.1)(keras.ops.ones((2, 3, 4)), training=False)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_avloc")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product multi-head attention with separate or fused q/k/v projections.

    Args:
        dim: feature dimension (input and output).
        num_heads: number of heads; ``dim`` must be divisible by it.
        fused_qkv: one ``Dense(3*dim)`` for self-attention instead of three projections.

    Call args:
        query: [B, N, D]; key: [B, S, D] (defaults to ``query``).

    Returns:
        [B, N, D].
    """

    def __init__(self, dim, num_heads, fused_qkv=False, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"keras_avloc/layers/grouping.py: dim={dim} must be divisible by num_heads={num_heads}.")
        self.dim, self.num_heads, self.fused_qkv = dim, num_heads, fused_qkv
        self.scale = (dim // num_heads) ** -0.5
        if fused_qkv:
            self.qkv = _dense(3 * dim, "qkv", self.dtype_policy)
        else:
            self.q_proj = _dense(dim, "q_proj", self.dtype_policy)
            self.k_proj = _dense(dim, "k_proj", self.dtype_policy)
            self.v_proj = _dense(dim, "v_proj", self.dtype_policy)
        self.proj = _dense(dim, "proj", self.dtype_policy)

    def build(self, input_shape=None):
        if self.fused_qkv:
            self.qkv.build((None, None, self.dim))
        else:
            for layer in (self.q_proj, self.k_proj, self.v_proj):
                layer.build((None, None, self.dim))
        self.proj.build((None, None, self.dim))
        self.built = True

    def call(self, query, key=None):
        if self.fused_qkv:
            q, k, v = ops.split(self.qkv(query), 3, axis=-1)
        else:
            key = query if key is None else key
            q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(key)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        attention = _softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.scale, axis=-1)
        return self.proj(_merge_heads(ops.matmul(attention, v)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "fused_qkv": self.fused_qkv}


@keras.saving.register_keras_serializable(package="keras_avloc")
class Mlp(keras.layers.Layer):
    """Two-layer perceptron with exact GELU: ``Dense(hidden) -> GELU -> Dense(out)``."""

    def __init__(self, in_dim, hidden_dim, out_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.hidden_dim = in_dim, hidden_dim
        self.out_dim = out_dim or in_dim
        self.fc1 = _dense(hidden_dim, "fc1", self.dtype_policy)
        self.fc2 = _dense(self.out_dim, "fc2", self.dtype_policy)

    def build(self, input_shape=None):
        self.fc1.build((None, None, self.in_dim))
        self.fc2.build((None, None, self.hidden_dim))
        self.built = True

    def call(self, x):
        hidden = self.fc1(x)
        # The exact GELU in float32 also under mixed precision: more accurate, and on CPU half the time of
        # TensorFlow's bfloat16 erf (forward + backward).
        activated = keras.activations.gelu(ops.cast(hidden, "float32"), approximate=False)
        return self.fc2(ops.cast(activated, hidden.dtype))

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "hidden_dim": self.hidden_dim,
                "out_dim": self.out_dim}


@keras.saving.register_keras_serializable(package="keras_avloc")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm self-attention block: ``x + DropPath(Attn(LN(x)))``, ``x + DropPath(MLP(LN(x)))``.

    Args:
        dim: token dimension.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path: stochastic-depth rate.
    """

    def __init__(self, dim, num_heads=8, mlp_ratio=4.0, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.mlp_ratio, self.drop_path_rate = dim, num_heads, mlp_ratio, drop_path
        self.norm1 = _layer_norm("norm1", self.dtype_policy)
        self.attn = MultiHeadAttention(dim, num_heads, fused_qkv=True, name="attn", dtype=self.dtype_policy)
        self.norm2 = _layer_norm("norm2", self.dtype_policy)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), name="mlp", dtype=self.dtype_policy)
        self.drop_path = DropPath(drop_path, name="drop_path", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for layer in (self.norm1, self.norm2):
            layer.build((None, None, self.dim))
        self.attn.build()
        self.mlp.build()
        self.drop_path.build((None, None, self.dim))
        self.built = True

    def call(self, x, training=None):
        x = x + self.drop_path(self.attn(self.norm1(x)), training=training)
        return x + self.drop_path(self.mlp(self.norm2(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "drop_path": self.drop_path_rate}


@keras.saving.register_keras_serializable(package="keras_avloc")
class CrossAttentionBlock(keras.layers.Layer):
    """Queries attend to keys, then an MLP; LayerNorm applied after the block (post-norm).

    Call args:
        query: [B, N, D]; key: [B, S, D].

    Returns:
        [B, N, D].
    """

    def __init__(self, dim, num_heads=8, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.mlp_ratio = dim, num_heads, mlp_ratio
        self.attn = MultiHeadAttention(dim, num_heads, name="attn", dtype=self.dtype_policy)
        self.norm2 = _layer_norm("norm2", self.dtype_policy)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), name="mlp", dtype=self.dtype_policy)
        self.norm_post = _layer_norm("norm_post", self.dtype_policy)

    def build(self, input_shape=None):
        self.attn.build()
        self.mlp.build()
        for layer in (self.norm2, self.norm_post):
            layer.build((None, None, self.dim))
        self.built = True

    def call(self, query, key):
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}


@keras.saving.register_keras_serializable(package="keras_avloc")
class GroupAssignment(keras.layers.Layer):
    """Assigns features to group tokens and pools each group's features.

    ``A = softmax_over_groups(q(tokens) . k(features) / sqrt(D))`` (soft), or its
    straight-through one-hot (hard; Gumbel noise added while training). The pooled
    group feature is ``proj(sum_p A[g, p] v(f_p) / (sum_p A[g, p] + assign_eps))``.

    Args:
        dim: feature dimension.
        hard: straight-through one-hot assignment instead of soft.
        gumbel_tau: temperature of the Gumbel-softmax in hard mode.
        assign_eps: added to the per-group normaliser (1.0 as in the reference).
        seed: optional seed for the Gumbel noise.

    Call args:
        tokens: [B, G, D]; features: [B, S, D].

    Returns:
        ``(pooled [B, G, D], assignment [B, G, S])`` where ``assignment`` sums to 1
        over groups (axis 1) for every feature, before the per-group normalisation.
    """

    def __init__(self, dim, hard=False, gumbel_tau=1.0, assign_eps=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hard, self.gumbel_tau, self.assign_eps, self.seed = dim, hard, gumbel_tau, assign_eps, seed
        self.scale = dim ** -0.5
        self.q_proj = _dense(dim, "q_proj", self.dtype_policy)
        self.k_proj = _dense(dim, "k_proj", self.dtype_policy)
        self.v_proj = _dense(dim, "v_proj", self.dtype_policy)
        self.proj = _dense(dim, "proj", self.dtype_policy)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.proj):
            layer.build((None, None, self.dim))
        self.built = True

    def assignment(self, logits, training=None):
        """Turns assignment logits [B, G, S] into weights that sum to 1 over groups."""
        if self.hard:
            if training:
                uniform = keras.random.uniform(ops.shape(logits), minval=1e-9, maxval=1.0,
                                               seed=self.seed_generator, dtype=logits.dtype)
                logits = (logits - ops.log(-ops.log(uniform))) / self.gumbel_tau
            return straight_through_one_hot(ops.softmax(logits, axis=1), axis=1)
        return ops.softmax(logits, axis=1)

    def call(self, tokens, features, training=None):
        q, k, v = self.q_proj(tokens), self.k_proj(features), self.v_proj(features)
        logits = ops.matmul(q, ops.transpose(k, (0, 2, 1))) * self.scale
        assignment = self.assignment(logits, training=training)
        weights = assignment / (ops.sum(assignment, axis=-1, keepdims=True) + self.assign_eps)
        return self.proj(ops.matmul(weights, v)), assignment

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hard": self.hard, "gumbel_tau": self.gumbel_tau,
                "assign_eps": self.assign_eps, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_avloc")
class GroupingBlock(keras.layers.Layer):
    """Groups features into ``num_groups`` class-aware tokens.

    tokens -> LN -> token-mixing MLP (over the group axis) -> LN -> cross-attention
    to the (LN-ed) features -> assignment pooling (+ residual) -> channel MLP (+ residual).

    Args:
        dim: feature dimension.
        num_groups: number of group (class) tokens, in and out.
        num_heads: heads of the cross-attention before assignment.
        hard: hard (straight-through Gumbel) assignment instead of soft.

    Call args:
        features: [B, S, D]; tokens: [B, G, D].

    Returns:
        ``(group_tokens [B, G, D], assignment [B, G, S])``.
    """

    def __init__(self, dim, num_groups, num_heads=8, hard=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_groups, self.num_heads, self.hard, self.seed = dim, num_groups, num_heads, hard, seed
        self.norm_tokens = _layer_norm("norm_tokens", self.dtype_policy)
        self.mlp_inter = Mlp(num_groups, int(0.5 * dim), num_groups, name="mlp_inter", dtype=self.dtype_policy)
        self.norm_post_tokens = _layer_norm("norm_post_tokens", self.dtype_policy)
        self.norm_x = _layer_norm("norm_x", self.dtype_policy)
        self.pre_assign_attn = CrossAttentionBlock(dim, num_heads, 4.0, name="pre_assign_attn",
                                                   dtype=self.dtype_policy)
        self.assign = GroupAssignment(dim, hard=hard, seed=seed, name="assign", dtype=self.dtype_policy)
        self.norm_new_x = _layer_norm("norm_new_x", self.dtype_policy)
        self.mlp_channels = Mlp(dim, 4 * dim, dim, name="mlp_channels", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for layer in (self.norm_tokens, self.norm_post_tokens, self.norm_x, self.norm_new_x):
            layer.build((None, None, self.dim))
        for layer in (self.mlp_inter, self.pre_assign_attn, self.assign, self.mlp_channels):
            layer.build()
        self.built = True

    def call(self, features, tokens, training=None):
        tokens = self.norm_tokens(tokens)
        features = self.norm_x(features)
        mixed = ops.transpose(self.mlp_inter(ops.transpose(tokens, (0, 2, 1))), (0, 2, 1))
        mixed = self.pre_assign_attn(self.norm_post_tokens(mixed), features)
        pooled, assignment = self.assign(mixed, features, training=training)
        grouped = pooled + mixed
        return grouped + self.mlp_channels(self.norm_new_x(grouped)), assignment

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_groups": self.num_groups,
                "num_heads": self.num_heads, "hard": self.hard, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_avloc")
class GroupingEncoder(keras.layers.Layer):
    """Self-attention over ``[features; class tokens]`` followed by a grouping block.

    Args:
        dim: feature dimension.
        num_groups: number of class tokens C.
        depth: number of self-attention blocks (3 in the paper).
        num_heads: attention heads (8).
        mlp_ratio: MLP ratio (4).
        drop_path: stochastic-depth rate of every block (0.1).
        hard: hard (straight-through Gumbel) assignment instead of soft.

    Call args:
        features: [B, S, D]; class_tokens: [C, D] (shared, broadcast over the batch).

    Returns:
        ``(class_aware_tokens [B, C, D], assignment [B, C, S])``.
    """

    def __init__(self, dim, num_groups, depth=3, num_heads=8, mlp_ratio=4.0, drop_path=0.1, hard=False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_groups, self.depth, self.num_heads = dim, num_groups, depth, num_heads
        self.mlp_ratio, self.drop_path, self.hard, self.seed = mlp_ratio, drop_path, hard, seed
        self.blocks = [TransformerBlock(dim, num_heads, mlp_ratio, drop_path, name=f"blocks_{i}",
                                        dtype=self.dtype_policy) for i in range(depth)]
        self.grouping = GroupingBlock(dim, num_groups, num_heads, hard=hard, seed=seed, name="grouping",
                                      dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for block in self.blocks:
            block.build()
        self.grouping.build()
        self.built = True

    def call(self, features, class_tokens, training=None):
        batch = ops.shape(features)[0]
        tokens = ops.broadcast_to(class_tokens[None], (batch, self.num_groups, self.dim))
        sequence = ops.concatenate([features, tokens], axis=1)
        for block in self.blocks:
            sequence = block(sequence, training=training)
        features, tokens = sequence[:, :-self.num_groups], sequence[:, -self.num_groups:]
        return self.grouping(features, tokens, training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_groups": self.num_groups, "depth": self.depth,
                "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "drop_path": self.drop_path,
                "hard": self.hard, "seed": self.seed}
