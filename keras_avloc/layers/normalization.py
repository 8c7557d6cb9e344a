"""Batch normalisation on TensorFlow's fused kernel (used by the ResNet-18 backbones)."""

import keras


@keras.saving.register_keras_serializable(package="keras_avloc")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` running TensorFlow's fused kernel on 4-D or 5-D channels-last input.

    Same weights, names, config and results as the Keras layer (biased batch variance in the moving
    average, like Keras), but one `FusedBatchNormV3` op forward and one gradient op backward instead
    of about ten element-wise ops; in training this removes several passes over every activation.
    Other backends, other ranks or axes, masks, and renorm fall back to the Keras implementation.

    Args:
        **kwargs: as `keras.layers.BatchNormalization` (e.g. `epsilon=1e-5, momentum=0.9`).

    Example:
    >>> bn = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="bn1")
    """

    def _fused_supported(self, inputs, mask):
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and len(inputs.shape) in (4, 5)
            and axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_supported(inputs, mask):
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
