using SkiaSharp;

namespace PolaFormer.Training.Data;

/// <summary>
/// Decodes JPEG and PNG files with SkiaSharp into 8-bit RGB the way torchvision's loader
/// (<c>PIL.Image.open(f).convert("RGB")</c>) sees them: no EXIF rotation, no colour management, alpha dropped
/// (not composited), greyscale and CMYK expanded to RGB.
/// </summary>
internal static class ImageDecoder
{
    /// <summary>The most pixels an image may declare: PIL's decompression-bomb limit (2 × MAX_IMAGE_PIXELS). A few
    /// hundred bytes of PNG can declare billions of pixels; the buffers are sized from the header.</summary>
    public const long MaxPixels = 178_956_970;

    /// <summary>The decoded image, or null when the file is not a complete image Skia can decode.</summary>
    /// <exception cref="InvalidDataException">The header declares more than <see cref="MaxPixels"/> pixels.</exception>
    public static RgbImage? TryDecode(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var codec = SKCodec.Create(stream);
            if (codec is null) return null;
            var size = codec.Info;
            if (size.Width <= 0 || size.Height <= 0) return null;
            CheckPixelBudget(path, size.Width, size.Height);
            var info = new SKImageInfo(size.Width, size.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
            var rgba = new byte[checked(4L * size.Width * size.Height)];
            SKCodecResult result;
            unsafe
            {
                fixed (byte* p = rgba) result = codec.GetPixels(info, (IntPtr)p);
            }
            if (result != SKCodecResult.Success) return null;
            var rgb = new byte[checked(3L * size.Width * size.Height)];
            for (int i = 0, o = 0; o < rgb.Length; i += 4, o += 3)
            {
                rgb[o] = rgba[i];
                rgb[o + 1] = rgba[i + 1];
                rgb[o + 2] = rgba[i + 2];
            }
            return new RgbImage(size.Width, size.Height, rgb);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Checks the size a header declares before any buffer is sized from it (in 32-bit arithmetic
    /// 65536 × 16385 × 4 bytes wraps to 256 KiB, and decoding into that buffer overruns it).</summary>
    public static void CheckPixelBudget(string path, long width, long height)
    {
        if (width * height > MaxPixels)
            throw new InvalidDataException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"Image '{path}' declares {width}×{height} = {width * height:N0} pixels; expected at most {MaxPixels:N0} (a corrupt header or a decompression bomb). Remove or replace the file."));
    }

    /// <summary>Reads only the header: true with the size when Skia recognises the file as an image.</summary>
    public static bool TryReadSize(string path, out int width, out int height)
    {
        width = height = 0;
        try
        {
            using var stream = File.OpenRead(path);
            using var codec = SKCodec.Create(stream);
            if (codec is null) return false;
            width = codec.Info.Width;
            height = codec.Info.Height;
            return width > 0 && height > 0;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}
