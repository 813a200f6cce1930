using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

/// <summary>Files crafted to exhaust memory or loop the listing: each is refused (or skipped) with its path named,
/// before it can allocate what it declares.</summary>
public sealed class HostileDataTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-hostile-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A valid PNG (signature, IHDR, one IDAT of a few zero bytes, IEND, correct CRCs) declaring
    /// <paramref name="width"/> × <paramref name="height"/> RGB pixels.</summary>
    internal static byte[] Png(uint width, uint height)
    {
        using var output = new MemoryStream();
        output.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8;   // bit depth
        ihdr[9] = 2;   // RGB
        Chunk(output, "IHDR", ihdr);
        using (var compressed = new MemoryStream())
        {
            using (var zlib = new ZLibStream(compressed, CompressionLevel.SmallestSize, leaveOpen: true)) zlib.Write(new byte[64]);
            Chunk(output, "IDAT", compressed.ToArray());
        }
        Chunk(output, "IEND", []);
        return output.ToArray();
    }

    private static void Chunk(Stream output, string type, byte[] data)
    {
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(length, (uint)data.Length);
        output.Write(length);
        var typed = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        output.Write(typed);
        Span<byte> crc = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(typed));
        output.Write(crc);
    }

    private static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    [Fact]
    public void A_png_declaring_65536_by_16385_pixels_is_refused_by_its_header_with_the_file_named()
    {
        var bomb = Path.Combine(_root, "bomb.png");
        File.WriteAllBytes(bomb, Png(65536, 16385));
        new FileInfo(bomb).Length.Should().BeLessThan(300, "the point is a tiny file declaring a huge image");
        ImageDecoder.TryReadSize(bomb, out int width, out int height).Should().BeTrue("Skia reads the header");
        (width, height).Should().Be((65536, 16385));

        FluentActions.Invoking(() => ImageDecoder.TryDecode(bomb)).Should().Throw<InvalidDataException>()
            .WithMessage($"Image '{bomb}' declares 65536×16385 = 1,073,807,360 pixels; expected at most 178,956,970*");

        var ordinary = Path.Combine(_root, "small.png");
        File.WriteAllBytes(ordinary, Png(4, 3));
        var image = ImageDecoder.TryDecode(ordinary);
        image.Should().NotBeNull("the crafted PNG is valid, so only its size stops the bomb");
        (image!.Width, image.Height).Should().Be((4, 3));
    }

    [Fact]
    public void The_png_bomb_in_an_image_folder_fails_when_loaded_with_the_file_named()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 2, trainPerClass: 2, valPerClass: 1);
        var bomb = Path.Combine(folder, "train", "class1", "9-bomb.png");
        File.WriteAllBytes(bomb, Png(65536, 16385));
        var train = ImageFolderDataset.Open(Path.Combine(folder, "train"), warn: _ => { });
        int index = Enumerable.Range(0, train.Count).Single(i => train.Source(i) == bomb);
        FluentActions.Invoking(() => train.TryLoadImage(index, out _)).Should().Throw<InvalidDataException>().WithMessage($"*'{bomb}'*65536×16385*");
    }

    private static byte[] DigitsHeader(uint count, uint height, uint width, uint train)
    {
        var header = new byte[28];
        Encoding.ASCII.GetBytes("PFDIGITS").CopyTo(header, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), count);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), height);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), width);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(24), train);
        return header;
    }

    /// <summary>gzip of a header then <paramref name="zeros"/> zero bytes, written in 1 MiB pieces: small on disk.</summary>
    private string GzipBomb(string name, byte[] header, long zeros)
    {
        var path = Path.Combine(_root, name);
        using (var file = File.Create(path))
        using (var gzip = new GZipStream(file, CompressionLevel.SmallestSize))
        {
            gzip.Write(header);
            var chunk = new byte[1 << 20];
            for (long left = zeros; left > 0; left -= chunk.Length) gzip.Write(chunk, 0, (int)Math.Min(chunk.Length, left));
        }
        return path;
    }

    [Fact]
    public void A_gzip_bomb_given_as_digits_is_refused_without_inflating_it()
    {
        // 64 MiB of zeros behind an honest header for 10 digits: the reader must stop after the declared bytes.
        var path = GzipBomb("bomb.bin.gz", DigitsHeader(10, 28, 28, 8), 64L << 20);
        new FileInfo(path).Length.Should().BeLessThan(200_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        FluentActions.Invoking(() => DigitsDataset.Load(path, DigitsSplit.Train)).Should().Throw<InvalidDataException>()
            .WithMessage($"Digits file '{path}' holds more than the 7,878 bytes its header declares*");
        (GC.GetAllocatedBytesForCurrentThread() - before).Should().BeLessThan(16L << 20, "the 64 MiB must not be inflated into memory");

        // A header declaring 4 GB is refused before anything is read.
        var huge = GzipBomb("huge.bin.gz", DigitsHeader(1_000_000, 64, 64, 900_000), 1 << 20);
        FluentActions.Invoking(() => Datasets.Open(huge)).Should().Throw<InvalidDataException>()
            .WithMessage($"Digits file '{huge}' declares 1000000 images of 64×64 (4,097,000,028 bytes); expected at most 1,073,741,824 bytes*");
    }

    [Fact]
    public void A_small_valid_digits_file_still_loads()
    {
        var path = Path.Combine(_root, "ten.bin.gz");
        using (var file = File.Create(path))
        using (var gzip = new GZipStream(file, CompressionLevel.Fastest))
        {
            gzip.Write(DigitsHeader(10, 28, 28, 8));
            gzip.Write(Enumerable.Range(0, 10).Select(i => (byte)i).ToArray());
            gzip.Write(new byte[10 * 28 * 28]);
        }
        var test = DigitsDataset.Load(path, DigitsSplit.Test);
        test.Count.Should().Be(2);
        test.Label(1).Should().Be(9);
    }

    [Fact]
    public void A_symbolic_link_loop_in_a_class_folder_is_skipped_with_a_warning_and_labels_stay_right()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 2, trainPerClass: 3, valPerClass: 1);
        var train = Path.Combine(folder, "train");
        var loop = Path.Combine(train, "class0", "again");
        Directory.CreateSymbolicLink(loop, "..");                          // class0/again → train/: both classes, forever
        var self = Path.Combine(train, "class1", "nested");
        Directory.CreateDirectory(self);
        Directory.CreateSymbolicLink(Path.Combine(self, "up"), Path.Combine(train, "class1"));   // class1/nested/up → class1

        var warnings = new List<string>();
        var dataset = ImageFolderDataset.Open(train, warn: warnings.Add);

        dataset.Count.Should().Be(6, "each of the 6 images once");
        Enumerable.Range(0, dataset.Count).Count(i => dataset.Label(i) == 0).Should().Be(3);
        Enumerable.Range(0, dataset.Count).Should().OnlyContain(i => Path.GetFileName(Path.GetDirectoryName(dataset.Source(i))) == $"class{dataset.Label(i)}");
        warnings.Should().HaveCount(2);
        warnings.Should().Contain(w => w.Contains($"'{loop}'") && w.Contains("loop"));
        warnings.Should().Contain(w => w.Contains($"'{Path.Combine(self, "up")}'") && w.Contains("loop"));
    }

    [Fact]
    public void A_symbolic_link_to_a_folder_outside_is_still_followed()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 1, trainPerClass: 2, valPerClass: 1);
        var extra = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "extra"), classes: 1, trainPerClass: 3, valPerClass: 1, seed: 2);
        Directory.CreateSymbolicLink(Path.Combine(folder, "train", "class0", "more"), Path.Combine(extra, "train", "class0"));
        var warnings = new List<string>();
        ImageFolderDataset.Open(Path.Combine(folder, "train"), warn: warnings.Add).Count.Should().Be(5);
        warnings.Should().BeEmpty();
    }
}
