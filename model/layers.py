"""Custom Keras layers of the shared-feature model, written only with ops the Edge TPU maps.

Each layer lowers to TFLite builtins from the Coral compiler's list (MUL, ADD, MEAN, SUM,
LOGISTIC, CONCATENATION, CONV_2D, STRIDED_SLICE, RESIZE_*): no BatchMatMul, no TILE, no SHAPE.
They are registered for Keras serialization, so ``.keras`` files load in safe mode.
"""

from __future__ import annotations

import keras
from keras import layers, ops

PACKAGE = "ocrnet_edge"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelRescale(layers.Layer):
    """Fixed rescale of RGB pixels in [0, 255] to [-1, 1]; the only preprocessing in the graph.

    A plain layer rather than ``keras.layers.Rescaling``: preprocessing layers carry a
    ``training=True`` default that leaks into BatchNorm when the model is traced for export.
    """

    def call(self, x):
        return ops.cast(x, "float32") * (1.0 / 127.5) - 1.0


@keras.saving.register_keras_serializable(package=PACKAGE)
class Resize(layers.Layer):
    """Static resize by an integer factor (RESIZE_BILINEAR or RESIZE_NEAREST_NEIGHBOR).

    ``UpSampling2D(interpolation="nearest")`` lowers to TILE + RESHAPE in Keras 3, which the
    Edge TPU does not map; ``ops.image.resize`` lowers to the resize builtins.
    """

    def __init__(self, factor: int, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        self.interpolation = interpolation

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        return ops.image.resize(x, (h * self.factor, w * self.factor), interpolation=self.interpolation)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, h * self.factor, w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` whose training step on TensorFlow runs TensorFlow's fused kernel.

    Keras 3 normalizes a training batch with separate ops (the moments, then a multiply and an add), each a pass over
    the activations, and so does their gradient; these passes took a quarter of a training step's kernel time on the
    CPU, most of it in the layers at stride 4. TensorFlow's ``FusedBatchNormV3`` does the same in one kernel each way.
    The moving statistics move as Keras moves them (the batch variance without Bessel's correction). Inference,
    export and every other backend take Keras' own path, so the exported graph is the same.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and mask is None and not self.renorm and self.scale and self.center
                and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and self.axis in (3, -1) and inputs.dtype == "float32"):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        y, mean, var = tf.compat.v1.nn.fused_batch_norm(inputs, self.gamma, self.beta, epsilon=self.epsilon,
                                                        is_training=True)
        # The kernel returns the variance with Bessel's correction; Keras keeps the batch's own.
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), var.dtype)
        var = var * (n - 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        return y


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSlice(layers.Layer):
    """Channels ``[start, stop)`` of an NHWC tensor: how the shared feature map is split."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ObjectContext(layers.Layer):
    """Object-contextual representations (Yuan et al., OCRNet), in Edge TPU ops.

    Given pixel features ``x`` (B, H, W, C) and coarse class logits ``coarse`` (B, H, W, M):

    1. soft object regions ``s_k = sigmoid(coarse[..., k])``;
    2. region features ``f_k = concat(mean_p(s_k * x), mean_p(s_k))`` (the region's mass is kept
       as a feature instead of dividing by it: division and a 1/area of a near-empty region
       would wreck the int8 range), then a shared transform to keys and values;
    3. pixel-region attention ``w_k(p) = sigmoid(<q(p), key_k> / sqrt(D))`` with a Mul and a channel
       Sum per region (no BatchMatMul), gated by a Logistic instead of a softmax over regions
       (the Edge TPU maps Softmax on 1-D tensors only);
    4. context ``c(p) = sum_k w_k(p) * value_k``, transformed and concatenated back with ``x``,
       then fused by a 1x1 convolution into the augmented representation.

    M is the number of semantic classes (5 here), so the per-region loop stays small.
    """

    def __init__(self, channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.out_channels = int(out_channels)
        d = self.channels
        self.query = [layers.Conv2D(d, 1, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU()]
        self.region_key = [layers.Conv2D(d, 1), layers.ReLU(), layers.Conv2D(d, 1)]
        self.region_value = [layers.Conv2D(d, 1), layers.ReLU()]
        self.context = [layers.Conv2D(d, 1, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU()]
        self.fuse = [layers.Conv2D(self.out_channels, 1, use_bias=False), layers.BatchNormalization(momentum=0.9),
                     layers.ReLU()]

    def build(self, input_shapes):
        x_shape = tuple(input_shapes[0])
        c, d = x_shape[-1], self.channels

        def build_stack(stack, shape):
            for layer in stack:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            return shape

        build_stack(self.query, x_shape)
        build_stack(self.region_key, (None, 1, 1, c + 1))
        build_stack(self.region_value, (None, 1, 1, c + 1))
        build_stack(self.context, (*x_shape[:-1], d))
        build_stack(self.fuse, (*x_shape[:-1], c + d))

    @staticmethod
    def _seq(stack, x, training):
        for layer in stack:
            x = layer(x, training=training) if isinstance(layer, layers.BatchNormalization) else layer(x)
        return x

    def call(self, inputs, training=None):
        x, coarse = inputs
        m = coarse.shape[-1]
        regions = ops.sigmoid(coarse)
        q = self._seq(self.query, x, training)
        scale = 1.0 / float(self.channels) ** 0.5
        ctx = None
        for k in range(m):
            s_k = regions[..., k : k + 1]
            f_k = ops.mean(s_k * x, axis=(1, 2), keepdims=True)
            mass = ops.mean(s_k, axis=(1, 2), keepdims=True)
            f_k = ops.concatenate([f_k, mass], axis=-1)
            key = self._seq(self.region_key, f_k, training)
            value = self._seq(self.region_value, f_k, training)
            w = ops.sigmoid(ops.sum(q * key, axis=-1, keepdims=True) * scale)
            term = w * value
            ctx = term if ctx is None else ctx + term
        ctx = self._seq(self.context, ctx, training)
        return self._seq(self.fuse, ops.concatenate([x, ctx], axis=-1), training)

    def compute_output_shape(self, input_shapes):
        x_shape = input_shapes[0]
        return (*x_shape[:-1], self.out_channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "out_channels": self.out_channels}
