/* Unit tests of the JSON writer's numbers (SPEC §4): floats in the shortest form that reads
 * back as the same double, laid out as Python's repr ("2.0", "0.1", "1e+300"); integers;
 * NaN and infinities refused. Expected strings were printed by Python 3.11's repr. */
#include "../../api/jsonw.h"
#include "../check.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct repr_case {
    uint64_t bits;
    const char *repr;
};

/* Python: for d in values: print(struct.pack('<d', d) as bits, repr(d)). Includes every power
 * of two whose shortest form is not the nearest "%.*g" (lopsided rounding intervals). */
static const struct repr_case repr_cases[] = {
    {0x0000000000000000u, "0.0"},
    {0x8000000000000000u, "-0.0"},
    {0x3ff0000000000000u, "1.0"},
    {0x4000000000000000u, "2.0"},
    {0xc000000000000000u, "-2.0"},
    {0x3fb999999999999au, "0.1"},
    {0x3fc999999999999au, "0.2"},
    {0x3fd3333333333334u, "0.30000000000000004"},
    {0x3ff6a09e667f3bcdu, "1.4142135623730951"},
    {0x7e37e43c8800759cu, "1e+300"},
    {0x01a56e1fc2f8f359u, "1e-300"},
    {0x4341c37937e08000u, "1e+16"},
    {0x430c6bf526340000u, "1000000000000000.0"},
    {0x4341c37937e07fffu, "9999999999999998.0"},
    {0x4480f0cf064dd592u, "1e+22"},
    {0x44b52d02c7e14af6u, "1e+23"},
    {0x4340000000000000u, "9007199254740992.0"},
    {0x43e0000000000000u, "9.223372036854776e+18"},
    {0x43e0000000000000u, "9.223372036854776e+18"},
    {0x3f1a36e2eb1c432du, "0.0001"},
    {0x3ee4f8b588e368f1u, "1e-05"},
    {0x3f202e4b6ce5dc68u, "0.00012345"},
    {0x405edd2f1a9fbe77u, "123.456"},
    {0x0000000000000001u, "5e-324"},
    {0x0000000000000002u, "1e-323"},
    {0x0010000000000000u, "2.2250738585072014e-308"},
    {0x000fffffffffffffu, "2.225073858507201e-308"},
    {0x7fefffffffffffffu, "1.7976931348623157e+308"},
    {0xffefffffffffffffu, "-1.7976931348623157e+308"},
    {0x3ff8000000000000u, "1.5"},
    {0x4059000000000000u, "100.0"},
    {0x43118b54f22aeb03u, "1234567890123456.8"},
    {0x4345ee2a2eb5a5c4u, "1.2345678901234568e+16"},
    {0x3fe0000000000000u, "0.5"},
    {0x3fd5555555555555u, "0.3333333333333333"},
    {0x3fe5555555555555u, "0.6666666666666666"},
    {0x400921fb54442d18u, "3.141592653589793"},
    {0x4005bf0a8b145769u, "2.718281828459045"},
    {0xbee9e409301b5a02u, "-1.23456789e-05"},
    {0x4011666666666666u, "4.35"},
    {0x3eff75104d551d69u, "3e-05"},
    {0x3e7ad7f29abcaf48u, "1e-07"},
    {0x3e8421f5f40d8376u, "1.5e-07"},
    {0x0060000000000000u, "7.120236347223045e-307"},
    {0x0100000000000000u, "7.291122019556398e-304"},
    {0x0420000000000000u, "8.209073602596753e-289"},
    {0x0660000000000000u, "5.641232424577593e-278"},
    {0x0d70000000000000u, "5.858190679279809e-244"},
    {0x0e80000000000000u, "7.678447687145631e-239"},
    {0x0eb0000000000000u, "6.142758149716505e-238"},
    {0x0f50000000000000u, "6.290184345309701e-235"},
    {0x13e0000000000000u, "5.940911144672375e-213"},
    {0x1480000000000000u, "6.083493012144512e-210"},
    {0x1690000000000000u, "5.225680706521042e-200"},
    {0x1730000000000000u, "5.351097043477547e-197"},
    {0x1da0000000000000u, "5.426657103235053e-166"},
    {0x2020000000000000u, "5.966672584960166e-154"},
    {0x20f0000000000000u, "4.887898181599368e-150"},
    {0x2160000000000000u, "6.256509672447191e-148"},
    {0x2800000000000000u, "5.075883674631299e-116"},
    {0x2910000000000000u, "6.653062250012736e-111"},
    {0x2d70000000000000u, "7.854549544476363e-90"},
    {0x3730000000000000u, "7.174648137343064e-43"},
    {0x39e0000000000000u, "6.310887241768095e-30"},
    {0x3b20000000000000u, "6.617444900424222e-24"},
    {0x3d30000000000000u, "5.684341886080802e-14"},
    {0x3e70000000000000u, "5.960464477539063e-08"},
    {0x4580000000000000u, "6.189700196426902e+26"},
    {0x4790000000000000u, "5.316911983139664e+36"},
    {0x4830000000000000u, "5.444517870735016e+39"},
    {0x4ab0000000000000u, "5.986310706507379e+51"},
    {0x4b50000000000000u, "6.129982163463556e+54"},
    {0x5120000000000000u, "6.070840288205404e+82"},
    {0x5300000000000000u, "6.518515124270356e+91"},
    {0x5580000000000000u, "7.167183174968974e+103"},
    {0x5790000000000000u, "6.156563468186638e+113"},
    {0x58d0000000000000u, "6.455624695217272e+119"},
    {0x5940000000000000u, "8.263199609878108e+121"},
    {0x5e00000000000000u, "6.243497100631985e+144"},
    {0x6150000000000000u, "5.623642243178996e+160"},
    {0x61f0000000000000u, "5.758609657015292e+163"},
    {0x6290000000000000u, "5.896816288783659e+166"},
    {0x63d0000000000000u, "6.183260036827614e+172"},
    {0x6510000000000000u, "6.483618076376552e+178"},
    {0x6c50000000000000u, "5.386379163185535e+213"},
    {0x7220000000000000u, "5.334411546303884e+241"},
    {0x75e0000000000000u, "6.150157786156811e+259"},
    {0x77f0000000000000u, "5.282945311356653e+269"},
    {0x7cf0000000000000u, "6.386688990511104e+293"},
    {0xf2a74de452e6b438u, "-1.989032661366619e+244"},
    {0x6513270e269e0d37u, "7.761117632285041e+178"},
    {0x0c5c7fd0a6a3a450u, "3.980498358697587e-249"},
    {0xd23f0824128b2f33u, "-1.5432835417340557e+88"},
    {0x1818e811892f902bu, "1.3647584518757569e-192"},
    {0x9531985d5d9dc9f8u, "-1.3701135617873088e-206"},
    {0xe8e25d940ed90475u, "-1.7160537630466207e+197"},
    {0x36f675cc81e74ef5u, "6.294675241195386e-44"},
    {0x1600a35a099950d8u, "1.0613447212142254e-202"},
    {0x6b0d549b6f03675au, "4.708325160387546e+207"},
    {0x3d9c172411e20b8fu, "6.387016158513563e-12"},
    {0x8d116ece1738f7d9u, "-9.973130378568733e-246"},
    {0x0f21ddb66cad4a26u, "8.779753225680271e-236"},
    {0x90c192cfd3ac94afu, "-5.795503248498993e-228"},
    {0xf28c105d1fb17c23u, "-5.988180159386011e+243"},
    {0xa170b33839263059u, "-1.306052388527796e-147"},
    {0x953f48f1a09f76b5u, "-2.436117699484841e-206"},
    {0x0fd630f1f29d0da9u, "2.233386999150174e-232"},
    {0x95e60af593bd04cfu, "-3.51527970626667e-203"},
    {0x0cb1e29c658cda14u, "1.5987381841032883e-247"},
    {0x3898d190f9ebdaccu, "4.6678633181812096e-36"},
    {0x8e81973e0becd7b0u, "-8.441872792105456e-239"},
    {0x2217beaddbc496cbu, "1.9015657400796622e-144"},
    {0x6b4cb2424a23d596u, "7.370437700706684e+208"},
    {0x8a6a63ec24ede6a4u, "-1.7163996725272777e-258"},
    {0x922766581e27a1c0u, "-3.2367190832119987e-221"},
    {0x8f6d05584ef8aa38u, "-2.2818334634712625e-234"},
    {0xae97ba94d0eda82fu, "-3.0536383926309363e-84"},
    {0x1a61dbe22e44158bu, "1.3449551894627777e-181"},
    {0x923a736994e3bf91u, "-7.317495976062606e-221"},
    {0x301850c5a38fd547u, "5.249822308814304e-77"},
    {0x18f135d25f557203u, "1.5450754142984396e-188"},
    {0xb64ce4228c38fb29u, "-3.953625698224792e-47"},
    {0x907a70c31012f037u, "-2.72491267476498e-229"},
    {0x9e7769b10f4205b4u, "-6.505141861548772e-162"},
    {0x7f15052434b9b5dfu, "1.441484839555994e+304"},
    {0x881ed162ae2eb154u, "-1.4583679262758548e-269"},
    {0xc6f877186d76b07eu, "-7.939416668807721e+33"},
    {0x7731af10506bf2efu, "1.4255183989699612e+266"},
    {0xec66a78795e761d1u, "-1.525315701232403e+214"},
    {0x5c90a9587403e430u, "7.750545741548908e+137"},
    {0x3f98e2774cbd87adu, "0.024301399287089676"},
    {0x2e05319acb5c7427u, "5.326960081783017e-87"},
    {0xc7a2ea20b2f14c94u, "-1.2570882301712172e+37"},
    {0x14f4733f3e7d1bfbu, "9.952684009002448e-208"},
    {0x4cdd2055930d6eafu, "1.8721667527122837e+62"},
    {0x7ebff20686734721u, "3.422978398947072e+302"},
    {0x57ee05cde00902c7u, "3.6967297937384553e+115"},
    {0x72e6cc3ababced20u, "3.113284956169447e+245"},
    {0x9be4bcfc49b64a08u, "-2.6202582260546103e-174"},
    {0x12bd4acefaecbd38u, "2.0745096302730225e-218"},
    {0x830e07bc1e398f10u, "-5.877500503097409e-294"},
    {0x2a3af4d46b0a18e8u, "2.938345597354166e-105"},
    {0x5790f82ec1d3fcffu, "6.529598674765832e+113"},
    {0xeeeacbe226e87555u, "-1.9837344250050814e+226"},
    {0x6bf46c697d2caf82u, "1.0743030475716402e+212"},
    {0xf646e1f40a097c97u, "-5.629271400715247e+261"},
    {0x13deef86ab1031d0u, "5.743310614918485e-213"},
    {0x8ede0d7ac3baea9eu, "-4.61515470702556e-237"},
    {0xca02135e92b1d3f2u, "-3.302201168194502e+48"},
    {0xd17f9acae01f5057u, "-3.8373366379117136e+84"},
    {0x571242425051c1ccu, "2.7444240984593666e+111"},
    {0x59a54a7bb1fee08fu, "7.037254769664525e+123"},
    {0x7f26144b98289fcdu, "3.0282415270685036e+304"},
    {0xcc011cdd9474031bu, "-1.3427313830183207e+58"},
    {0x119a72d174c9df6au, "7.145365052251808e-224"},
    {0x17f5e837d70820feu, "3.0010119427191346e-193"},
    {0x451abd81f1d69ed6u, "8.08174890787967e+24"},
    {0xb2715945795e8229u, "-1.029599445714058e-65"},
    {0x10a3d6b2aa05e11au, "1.6356324386913733e-228"},
    {0xbb2d420f0f88080bu, "-1.210084267904234e-23"},
    {0x4f426dcbb394fb36u, "6.512205859834416e+73"},
    {0x93f448b3a5aa3c81u, "-1.5063173670565552e-212"},
    {0xae658f33fe3b890bu, "-3.468068334360956e-85"},
    {0x72158370d269a9a5u, "3.5862982565236525e+241"},
    {0xb774eb5248db40afu, "-1.500880737539812e-41"},
    {0xe315128862c33a4fu, "-1.9881605394901064e+169"},
    {0x58d5563dab2cd31eu, "8.608929980762736e+119"},
    {0xf0ce583505c6af07u, "-2.412056419517317e+235"},
    {0x5affb2297631a992u, "2.1970596639628e+130"},
    {0x9c6539382b0537e6u, "-6.864829614150003e-172"},
    {0x7e62aa0a1df9fd78u, "6.249646571111859e+300"},
    {0x37dc76fb0f17a300u, "1.3070380624806793e-39"},
    {0x49952399c4aaeac1u, "3.0170681842882087e+46"},
    {0xbd0561e6211c70cfu, "-9.495701001087435e-15"},
    {0x65dc9f503f63af83u, "4.750750204750985e+182"},
    {0xeab477d26415479cu, "-1.0267710304426359e+206"},
    {0x7f1b103cdf1582b0u, "1.8559166032057722e+304"},
    {0x2a96fb1a14a0f9e7u, "1.6032007377980954e-103"},
    {0x66d2287672fdf202u, "1.9751801151887592e+187"},
    {0x4720771f8ca81811u, "4.274642804177215e+34"},
    {0x230d977ee2257159u, "7.765387138513795e-140"},
    {0x6e36aab0d1bc52d9u, "8.193439767873551e+222"},
    {0x8cdb305fdd2e1609u, "-9.721565446084252e-247"},
    {0xb4d66a3a47469a4du, "-3.6566096214330605e-54"},
    {0xfc891b4a6a50df4du, "-7.829495745681799e+291"},
    {0xaec6f0245bd86d40u, "-2.361499160522349e-83"},
    {0x616499c9e25a7605u, "1.448139668433268e+161"},
    {0x3b1287fff52ddf5du, "3.8321725482165366e-24"},
    {0x153e7c2a26a2c0bdu, "2.373829056313949e-206"},
    {0x26bb7dbd2d1c9af0u, "4.1586747791282524e-122"},
    {0xa8948c893b618676u, "-3.337733639824717e-113"},
    {0x0316909e3bbbe9eau, "8.832790543982714e-294"},
    {0xd4c28c2e7c26847fu, "-2.0284108606212458e+100"},
    {0x2eae05cf96d0cc5fu, "7.7271785554382585e-84"},
    {0x482c9cbc43435cc5u, "4.868121678598285e+39"},
    {0x254b0c4e010c4759u, "4.877621251706118e-129"},
    {0x88daf4016b4013efu, "-5.224362650831876e-266"},
    {0x9c1caaf75e8766edu, "-2.8977267740353203e-173"},
    {0x519088f590fbbd11u, "8.030506098092244e+84"},
    {0x20203626f3fe39c0u, "6.045556425707975e-154"},
    {0xdbf4a8b2b0c4312du, "-9.38484012349791e+134"},
    {0xf341e07a83f73f16u, "-1.5624204901097633e+247"},
    {0xa7abe1c29e1a8ef4u, "-1.3820816268679183e-117"},
    {0xbd628881ad1b72dbu, "-5.267460409693142e-13"},
    {0x74e69a5d0dd27a65u, "1.3257208647146701e+255"},
    {0xdef88334e647cb8fu, "-3.1343387564175544e+149"},
    {0xf3aed0b6c7ac1491u, "-1.7236642596087033e+249"},
    {0xae3a2b7fdfe01893u, "-5.26215508230537e-86"},
    {0x8f2c6ec8cc4169a3u, "-1.3972441246414233e-235"},
    {0xc06ae7be76c8b439u, "-215.242"},
    {0xc06a7851eb851eb8u, "-211.76"},
    {0x4070d00000000000u, "269.0"},
    {0xc083566666666666u, "-618.8"},
    {0xc05dc00000000000u, "-119.0"},
    {0xc074000000000000u, "-320.0"},
    {0xc088d9ed288ce704u, "-795.2408"},
    {0xc085c80000000000u, "-697.0"},
    {0x408c0f2e147ae148u, "897.8975"},
    {0xc08da7fc5e6ff7e0u, "-948.998227"},
    {0xc08240c28f5c28f6u, "-584.095"},
    {0xc085f73333333333u, "-702.9"},
    {0x408c777ced916873u, "910.936"},
    {0xc071000000000000u, "-272.0"},
    {0xc0880a5810624dd3u, "-769.293"},
    {0x408ed1a3d70a3d71u, "986.205"},
    {0xc0439ae147ae147bu, "-39.21"},
    {0xc089e00000000000u, "-828.0"},
    {0x407f3590c0ad03dau, "499.34784"},
    {0xc07d67c78b7a1c26u, "-470.486217"},
    {0x407801d0e5604189u, "384.1135"},
    {0xc08dce780346dc5du, "-953.8086"},
    {0xc07147ebd9018e75u, "-276.49508"},
    {0x4055800000000000u, "86.0"},
    {0x40802251eb851eb8u, "516.29"},
    {0x408de80516db0dd8u, "957.002485"},
    {0xc0898fd4c5da6a44u, "-817.978893"},
    {0xc07ddc51eb851eb8u, "-477.77"},
    {0x40898428f5c28f5cu, "816.52"},
    {0x4080ff01a36e2eb2u, "543.8758"},
    {0x4054c896bb98c7e3u, "83.1342"},
    {0xc0754b3333333333u, "-340.7"},
    {0x406c4e9b34a44c7bu, "226.456446"},
    {0x408e4ed11a543f1cu, "969.852101"},
    {0xc0830d999999999au, "-609.7"},
    {0x4083e553be22e5deu, "636.66589"},
    {0x4082f5999999999au, "606.7"},
    {0x4041a3d70a3d70a4u, "35.28"},
    {0x407ce00000000000u, "462.0"},
    {0x408221d2f1a9fbe7u, "580.228"},
    {0xc07e1a6b9a176ddbu, "-481.65127"},
    {0x406a48f5c28f5c29u, "210.28"},
    {0xc05a62db61bb05fbu, "-105.54464"},
    {0x408e80a3d70a3d71u, "976.08"},
    {0xc08a380000000000u, "-839.0"},
    {0xc081126666666666u, "-546.3"},
    {0xc074486666666666u, "-324.525"},
    {0x406f043fe5c91d15u, "248.1328"},
    {0x408546f7ced91687u, "680.871"},
    {0x4089933333333333u, "818.4"},
    {0x4082b80000000000u, "599.0"},
    {0x4084e80000000000u, "669.0"},
    {0x40899c6f27bb2fecu, "819.554275"},
    {0x407a700000000000u, "423.0"},
    {0xc045f33333333333u, "-43.9"},
    {0xc06084cb923a29c7u, "-132.14985"},
    {0xc074ef7318fc5048u, "-334.9656"},
    {0x408be2a540cc78eau, "892.33069"},
    {0xc06a0a5604189375u, "-208.323"},
    {0x407e700000000000u, "487.0"},
};

static double from_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static const char *fmt(double d)
{
    static char out[32];
    if (jsonw_format_double(out, d) < 0) {
        return "(refused)";
    }
    return out;
}

static void test_repr(void)
{
    for (size_t k = 0; k < sizeof repr_cases / sizeof repr_cases[0]; k++) {
        CHECK_EQ_STR(fmt(from_bits(repr_cases[k].bits)), repr_cases[k].repr);
    }
    CHECK_EQ_STR(fmt(2.0), "2.0");
    CHECK_EQ_STR(fmt(0.1), "0.1");
    CHECK_EQ_STR(fmt(1e300), "1e+300");
    CHECK_EQ_STR(fmt(-1.5e-7), "-1.5e-07");
    CHECK_EQ_STR(fmt(1e9), "1000000000.0");
    CHECK_EQ_STR(fmt(NAN), "(refused)");
    CHECK_EQ_STR(fmt(INFINITY), "(refused)");
    CHECK_EQ_STR(fmt(-INFINITY), "(refused)");

    struct buf b;
    buf_init(&b, 1024);
    CHECK_EQ_INT(jsonw_double(&b, NAN), -1);
    CHECK_EQ_INT(buf_len(&b), 0);
    CHECK_EQ_INT(jsonw_double(&b, 0.25), 0);
    CHECK_EQ_INT(jsonw_int(&b, INT64_MIN), 0);
    CHECK_EQ_INT(jsonw_int(&b, INT64_MAX), 0);
    CHECK_EQ_INT(jsonw_int(&b, 0), 0);
    CHECK_EQ_STR(buf_data(&b), "0.25-922337203685477580892233720368547758070");
    buf_cleanup(&b);
}

/* 100k random bit patterns: each finite one prints in under 32 bytes, reads back exactly with
 * strtod, parses as a JSON float (never an integer), and drops no needed digit. */
static void test_round_trip(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    int bad_trip = 0, bad_json = 0, bad_short = 0, n = 0;
    for (int k = 0; k < 100000; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* Half the cases are "ordinary" doubles near 1, where most results live. */
        uint64_t bits = k % 2 ? x : (x & 0x800fffffffffffffu) | ((uint64_t)(1013 + k % 20) << 52);
        double d = from_bits(bits);
        if (!isfinite(d)) {
            continue;
        }
        n++;
        char out[32];
        int len = jsonw_format_double(out, d);
        bad_trip += len <= 0 || len >= 32 || (int)strlen(out) != len || strtod(out, NULL) != d;
        json_t *j = json_loads(out, JSON_DECODE_ANY, NULL);
        bad_json += !json_is_real(j) || json_real_value(j) != d;
        json_decref(j);
        /* Shortest: the nearest decimal with one significant digit fewer never reads back
         * as d (the repr table above covers the lopsided cases where a neighbour might). */
        char sig[32];
        int digits = 0;
        for (const char *p = out; *p != '\0' && *p != 'e'; p++) {
            if (*p >= '0' && *p <= '9' && (digits > 0 || *p != '0')) {
                sig[digits++] = *p;
            }
        }
        while (digits > 1 && sig[digits - 1] == '0') {
            digits--;
        }
        if (digits > 1) {
            char fewer[40];
            snprintf(fewer, sizeof fewer, "%.*e", digits - 2, d);
            bad_short += strtod(fewer, NULL) == d;
        }
    }
    CHECK(n > 99000);
    CHECK_EQ_INT(bad_trip, 0);
    CHECK_EQ_INT(bad_json, 0);
    CHECK_EQ_INT(bad_short, 0);
}

/* The exact integer fast path prints what the printf/strtod reference prints: random doubles
 * across its range and beyond, sqrt results (the benchmark's), integers, ties, powers of 2
 * and 10 and their neighbours. */
static void test_fast_matches_reference(void)
{
    uint64_t x = 0x2545f4914f6cdd1du;
    int bad = 0, n = 0;
    char a[32], b[32];
#define SAME(dv)                                                                                   \
    do {                                                                                           \
        double d_ = (dv);                                                                          \
        int la_ = jsonw_format_double(a, d_), lb_ = jsonw_format_double_ref(b, d_);                \
        n++;                                                                                       \
        if (la_ != lb_ || strcmp(a, b) != 0) {                                                     \
            if (bad++ < 5) {                                                                       \
                fprintf(stderr, "fast %s ref %s (%a)\n", a, b, d_);                                \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    for (int k = 0; k < 300000; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* exponents from 2^-20 to 2^56: the fast range and a margin on each side */
        uint64_t bits = (x & 0x800fffffffffffffu) | ((uint64_t)(1003 + k % 77) << 52);
        double d = from_bits(bits);
        SAME(d);
        SAME(nextafter(d, 0));
        SAME((double)(x >> (k % 64)));
    }
    for (int i = 10; i < 200000; i++) {
        SAME(sqrt((double)i));
    }
    double p10 = 1e-6;
    for (int k = 0; k < 24; k++, p10 *= 10) {
        SAME(p10);
        SAME(nextafter(p10, 0));
        SAME(nextafter(p10, INFINITY));
    }
    for (int k = -20; k < 56; k++) {
        double p2 = ldexp(1.0, k);
        SAME(p2);
        SAME(nextafter(p2, 0));
        SAME(nextafter(p2, INFINITY));
        SAME(p2 * 1.5);
    }
    for (int k = 0; k < 1000; k++) {
        SAME(k / 8.0);
        SAME(k / 1000.0);
        SAME(k + 0.5);
    }
#undef SAME
    CHECK_EQ_INT(bad, 0);
    CHECK(n > 1000000);
}

/* The NDJSON result line, the bytes the e2e tests compare: every digit count of the index,
 * appended after what the buffer holds, and refused whole past the cap. */
static void test_result_line(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    CHECK_EQ_INT(jsonw_result_line(&b, 0, "1.0", 3), 0);
    CHECK_EQ_INT(jsonw_result_line(&b, 7, "{\"a\":[1,2]}", 11), 0);
    CHECK_EQ_INT(jsonw_result_line(&b, 1234567890123u, "\"x\"", 3), 0);
    CHECK_EQ_INT(jsonw_result_line(&b, UINT64_MAX, "null", 4), 0);
    const char want[] = "{\"index\":0,\"result\":1.0}\n"
                        "{\"index\":7,\"result\":{\"a\":[1,2]}}\n"
                        "{\"index\":1234567890123,\"result\":\"x\"}\n"
                        "{\"index\":18446744073709551615,\"result\":null}\n";
    CHECK_EQ_INT((long)buf_len(&b), (long)(sizeof want - 1));
    CHECK(memcmp(buf_data(&b), want, sizeof want - 1) == 0);
    buf_cleanup(&b);
    struct buf small;
    buf_init(&small, 16);
    CHECK_EQ_INT(jsonw_result_line(&small, 1, "2", 1), -1);
    CHECK_EQ_INT((long)buf_len(&small), 0);
    buf_cleanup(&small);
}

/* clang-format off */
static const struct check_case cases[] = {
    {"result_line", test_result_line},
    {"repr", test_repr},
    {"round_trip", test_round_trip},
    {"fast_matches_reference", test_fast_matches_reference},
};
/* clang-format on */

CHECK_MAIN("test_jsonw", cases)
