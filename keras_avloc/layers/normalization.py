"""Batch normalisation on TensorFlow's fused kernel (used by the ResNet-18 backbones)."""

import keras

from keras_avloc.layers.replicas import under_strategy


@keras.saving.register_keras_serializable(package="keras_avloc")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` running TensorFlow's fused kernel on 4-D or 5-D channels-last input.

    Same weights, names, config and results as the Keras layer (biased batch variance in the moving
    average, like Keras), but one `FusedBatchNormV3` op forward and one gradient op backward instead
    of about ten element-wise ops; in training this removes several passes over every activation.
    Other backends, other ranks or axes, masks, and renorm fall back to the Keras implementation.

    Under a `tf.distribute` strategy (any but the default one), training batches are normalised with the
    statistics of the *global* batch (Keras' synchronized moments: the per-replica sums are all-reduced), so
    N replicas of b clips normalise as one replica of N*b clips would.

    Args:
        **kwargs: as `keras.layers.BatchNormalization` (e.g. `epsilon=1e-5, momentum=0.9`).

    Example:
    >>> bn = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="bn1")
    """

    def _moments(self, inputs, mask):
        if mask is None and under_strategy():
            return self._synchronized_moments(inputs)
        return super()._moments(inputs, mask)

    def _synchronized_moments(self, inputs):
        """Mean and biased variance over the global batch, in two passes (sum -> mean, then the sum of squared
        deviations), each all-reduced across replicas: no float32 cancellation on channels whose mean is large
        against their spread, unlike the E[x^2] - E[x]^2 of Keras' synchronized moments. Differentiable through
        both sums."""
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        x = tf.cast(inputs, tf.float32)
        axes = list(self._reduction_axes)
        shape = tf.shape(x)
        count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), tf.float32)
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                          [tf.reduce_sum(x, axis=axes, keepdims=True), count])
        mean = total / tf.maximum(count, 1.0)
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                     tf.reduce_sum(tf.square(x - mean), axis=axes, keepdims=True))
        variance = squares / tf.maximum(count, 1.0)
        return tf.squeeze(mean, axes), tf.squeeze(variance, axes)

    def _fused_supported(self, inputs, mask, training=None):
        if training and under_strategy():
            return False
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and len(inputs.shape) in (4, 5)
            and axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_supported(inputs, mask, training):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float32, tf.bfloat16):
            x = tf.cast(x, tf.float32)
        channels = x.shape[-1]
        data_format = "NHWC" if len(x.shape) == 4 else "NDHWC"
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            outputs, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32),
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format=data_format,
                is_training=True,
            )
            # The fused op returns the unbiased (n - 1) batch variance; Keras averages the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            biased_variance = batch_variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(batch_mean) * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + tf.stop_gradient(biased_variance) * (1.0 - momentum)
            )
        else:
            outputs, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format=data_format,
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)
