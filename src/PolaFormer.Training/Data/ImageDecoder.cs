using SkiaSharp;

namespace PolaFormer.Training.Data;

/// <summary>
/// Decodes JPEG and PNG files with SkiaSharp into 8-bit RGB the way torchvision's loader
/// (<c>PIL.Image.open(f).convert("RGB")</c>) sees them: no EXIF rotation, no colour management, alpha dropped
/// (not composited), greyscale and CMYK expanded to RGB.
/// </summary>
internal static class ImageDecoder
{
    /// <summary>The decoded image, or null when the file is not a complete image Skia can decode.</summary>
    public static RgbImage? TryDecode(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var codec = SKCodec.Create(stream);
            if (codec is null) return null;
            var size = codec.Info;
            if (size.Width <= 0 || size.Height <= 0) return null;
            var info = new SKImageInfo(size.Width, size.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
            var rgba = new byte[info.BytesSize];
            SKCodecResult result;
            unsafe
            {
                fixed (byte* p = rgba) result = codec.GetPixels(info, (IntPtr)p);
            }
            if (result != SKCodecResult.Success) return null;
            var rgb = new byte[size.Width * size.Height * 3];
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
