"""The model zoo: dense and temporal-convolutional autoencoders built from a recipe.

Every autoencoder is two tf-keras models from the start, `encoder` (window -> code) and
`decoder` (code -> window), so they can be pruned, quantized and exported apart. What only
matters while training — input corruption (denoising) and the activity penalty on the code
(sparse) — lives in `training_model`, around the pair, and never reaches an export.

Tied weights: a tied decoder layer owns only its bias and uses the kernel of the mirrored
encoder layer (transposed for dense, the adjoint convolution for conv1d). The tied layers are
TFMOT `PrunableLayer`s with no prunable weights of their own: the shared kernel is pruned where
it lives, in the encoder, and because TFMOT masks the variable in place the decoder sees the
same zeros. `untie` turns a tied decoder into plain Keras layers for saving and export.
"""

from __future__ import annotations

from ._tf import keras, tf, tfmot
from .recipe import Recipe


class DenseTied(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Dense layer whose kernel is the transpose of `tied_to`'s kernel."""

    def __init__(self, tied_to: keras.layers.Dense, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.tied_to = tied_to
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        units = self.tied_to.kernel.shape[0]
        self.bias = self.add_weight(name="bias", shape=(units,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return self.activation(tf.matmul(x, self.tied_to.kernel, transpose_b=True) + self.bias)

    def get_prunable_weights(self):
        return []  # the kernel is pruned in the encoder layer that owns it

    def untied(self):
        layer = keras.layers.Dense(self.tied_to.kernel.shape[0], activation=self.activation, name=self.name)
        return layer, lambda: [tf.transpose(self.tied_to.kernel).numpy(), self.bias.numpy()]


class Conv1DTransposeTied(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Transposed (adjoint) convolution with the kernel of a stride-2 `Conv1D` encoder layer."""

    def __init__(self, tied_to: keras.layers.Conv1D, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.tied_to = tied_to
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        channels = self.tied_to.kernel.shape[1]
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        k, channels, _ = self.tied_to.kernel.shape
        stride = self.tied_to.strides[0]
        shape = tf.stack([tf.shape(x)[0], tf.shape(x)[1] * stride, channels])
        y = tf.nn.conv1d_transpose(x, self.tied_to.kernel, shape, strides=stride, padding="SAME")
        return self.activation(y + self.bias)

    def get_prunable_weights(self):
        return []

    def untied(self):
        k, channels, _ = self.tied_to.kernel.shape
        layer = keras.layers.Conv1DTranspose(
            channels, k, strides=self.tied_to.strides[0], padding="same", activation=self.activation, name=self.name
        )
        return layer, lambda: [self.tied_to.kernel.numpy(), self.bias.numpy()]


class RandomMask(keras.layers.Layer):
    """Denoising corruption: sets a random `rate` fraction of the inputs to zero while training."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed

    def call(self, x, training=None):
        if not training:
            return x
        keep = tf.cast(tf.random.uniform(tf.shape(x), seed=self.seed) >= self.rate, x.dtype)
        return x * keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class CodePenalty(keras.layers.Layer):
    """Sparse autoencoder: adds an activity penalty on the code and passes it through.

    `l1`: weight * mean over windows of sum |code|.
    `kl`: weight * sum over code units of KL(target || mean activation), the firing-rate
    penalty of the classic sparse autoencoder (the code must be in (0, 1): sigmoid).
    """

    def __init__(self, kind: str, weight: float, target: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.weight, self.target = kind, weight, target

    def call(self, code):
        if self.kind == "l1":
            penalty = tf.reduce_mean(tf.reduce_sum(tf.abs(code), axis=-1))
        else:
            rho = self.target
            rho_hat = tf.clip_by_value(tf.reduce_mean(code, axis=0), 1e-6, 1 - 1e-6)
            penalty = tf.reduce_sum(rho * tf.math.log(rho / rho_hat) + (1 - rho) * tf.math.log((1 - rho) / (1 - rho_hat)))
        self.add_loss(self.weight * penalty)
        return code

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "weight": self.weight, "target": self.target}


def input_shape(recipe: Recipe, channels: int) -> tuple[int, ...]:
    """The encoder's input shape for one window: flat for dense models, (time, channels) for conv."""
    w = recipe.data.window
    return (w * channels,) if recipe.model.kind == "dense" else (w, channels)


def build(recipe: Recipe, channels: int) -> tuple[keras.Model, keras.Model]:
    """The (encoder, decoder) pair the recipe describes, for windows of `channels` channels."""
    keras.utils.set_random_seed(recipe.train.seed)
    if recipe.model.kind == "dense":
        return _dense(recipe, channels)
    return _conv1d(recipe, channels)


def _dense(recipe: Recipe, channels: int):
    m = recipe.model
    n_in = recipe.data.window * channels
    inp = keras.Input((n_in,), name="window")
    enc_layers = [keras.layers.Dense(u, activation=m.activation, name=f"enc_dense_{i}") for i, u in enumerate(m.hidden)]
    enc_layers.append(keras.layers.Dense(m.code_size, activation=m.code_activation, name="code"))
    x = inp
    for layer in enc_layers:
        x = layer(x)
    encoder = keras.Model(inp, x, name="encoder")

    code = keras.Input((m.code_size,), name="code_in")
    x = code
    sizes = list(reversed(m.hidden)) + [n_in]
    for i, (units, mirror) in enumerate(zip(sizes, reversed(enc_layers))):
        act = m.activation if i < len(sizes) - 1 else None
        name = f"dec_dense_{i}"
        layer = DenseTied(mirror, activation=act, name=name) if m.tied else keras.layers.Dense(units, act, name=name)
        x = layer(x)
    return encoder, keras.Model(code, x, name="decoder")


def _conv1d(recipe: Recipe, channels: int):
    m = recipe.model
    w = recipe.data.window
    inp = keras.Input((w, channels), name="window")
    convs = [
        keras.layers.Conv1D(f, m.kernel_size, strides=2, padding="same", activation=m.activation, name=f"enc_conv_{i}")
        for i, f in enumerate(m.filters)
    ]
    x = inp
    for layer in convs:
        x = layer(x)
    reduced = (w // 2 ** len(m.filters), m.filters[-1])
    x = keras.layers.Flatten(name="flatten")(x)
    to_code = keras.layers.Dense(m.code_size, activation=m.code_activation, name="code")
    encoder = keras.Model(inp, to_code(x), name="encoder")

    code = keras.Input((m.code_size,), name="code_in")
    if m.tied:
        x = DenseTied(to_code, activation=m.activation, name="dec_dense")(code)
    else:
        x = keras.layers.Dense(reduced[0] * reduced[1], activation=m.activation, name="dec_dense")(code)
    x = keras.layers.Reshape(reduced, name="unflatten")(x)
    outs = list(reversed([channels] + m.filters[:-1]))
    for i, (f, mirror) in enumerate(zip(outs, reversed(convs))):
        act = m.activation if i < len(outs) - 1 else None
        name = f"dec_conv_{i}"
        if m.tied:
            x = Conv1DTransposeTied(mirror, activation=act, name=name)(x)
        else:
            x = _upsample2(x, f"upsample_{i}")
            x = keras.layers.Conv1D(f, m.kernel_size, padding="same", activation=act, name=name)(x)
    return encoder, keras.Model(code, x, name="decoder")


def _upsample2(x, name: str):
    """UpSampling1D(2) as reshape / concatenate-with-itself / reshape. Keras' own layer converts
    to one CONCATENATION of every time step at a fixed batch, more inputs than TFLite Micro's
    CONCATENATION takes (10), so the device model (encoder + decoder) would not run there."""
    steps, channels = x.shape[1], x.shape[2]
    x = keras.layers.Reshape((steps, 1, channels), name=f"{name}_split")(x)
    x = keras.layers.Concatenate(axis=2, name=name)([x, x])
    return keras.layers.Reshape((2 * steps, channels), name=f"{name}_merge")(x)


class RepeatSteps(keras.layers.Layer):
    """UpSampling1D(size) as `_upsample2` builds it, in one layer: what export puts in place of a
    model's own UpSampling1D (a clone swaps one layer for one layer). `size` copies are
    concatenated, so `size` <= 10 for TFLite Micro."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, x):
        steps, channels = x.shape[1], x.shape[2]
        x = tf.reshape(x, (-1, steps, 1, channels))
        return tf.reshape(tf.concat([x] * self.size, axis=2), (-1, self.size * steps, channels))


def training_model(encoder: keras.Model, decoder: keras.Model, recipe: Recipe) -> keras.Model:
    """encoder + decoder with the training-only parts: input corruption and code penalty."""
    m = recipe.model
    inp = keras.Input(encoder.input_shape[1:], name="clean_window")
    x = inp
    if m.denoise is not None and m.denoise.kind == "gaussian":
        x = keras.layers.GaussianNoise(m.denoise.stddev, name="corrupt")(x)
    elif m.denoise is not None:
        x = RandomMask(m.denoise.rate, seed=recipe.train.seed, name="corrupt")(x)
    code = encoder(x)
    if m.sparse is not None:
        code = CodePenalty(m.sparse.kind, m.sparse.weight, m.sparse.target, name="code_penalty")(code)
    model = keras.Model(inp, decoder(code), name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(recipe.train.learning_rate), loss="mse")
    return model


def untie(decoder: keras.Model) -> keras.Model:
    """A copy of `decoder` with every tied layer replaced by a plain Keras layer holding the
    (transposed) shared kernel: same outputs, no reference to the encoder, saveable alone."""
    if not any(isinstance(l, (DenseTied, Conv1DTransposeTied)) for l in decoder.layers):
        return decoder
    weights = {}

    def clone(layer):
        if isinstance(layer, (DenseTied, Conv1DTransposeTied)):
            new, get_weights = layer.untied()
            weights[layer.name] = get_weights
            return new
        weights[layer.name] = layer.get_weights
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(decoder, clone_function=clone)
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name]())
    return plain
